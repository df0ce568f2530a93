//! Diesel table definitions matching `migrations/` (hand-written: diesel_cli is not installed;
//! the API tests select every column of the tables they write on both backends).

diesel::table! {
    residents (resident_code) {
        resident_code -> Text,
        individual_number -> Nullable<Text>,
        name -> Text,
        name_kana -> Text,
        former_surname -> Nullable<Text>,
        alias -> Nullable<Text>,
        birth_date -> Text,
        sex -> Text,
        address -> Text,
        municipality_code -> Text,
        status -> Text,
        updated_at -> Text,
        permanent_domicile -> Nullable<Text>,
        domicile_head -> Nullable<Text>,
    }
}

diesel::table! {
    change_history (id) {
        id -> BigInt,
        resident_code -> Text,
        reason -> Text,
        change_date -> Text,
        municipality_code -> Text,
        payload -> Text,
        recorded_at -> Text,
        source_sender -> Text,
        source_seq -> BigInt,
        trace_id -> Nullable<Text>,
    }
}

diesel::table! {
    outbox (seq) {
        seq -> BigInt,
        payload -> Text,
        created_at -> Text,
        sent_at -> Nullable<Text>,
    }
}

diesel::table! {
    inbox (sender, seq) {
        sender -> Text,
        seq -> BigInt,
        applied_at -> Text,
    }
}

diesel::table! {
    daily_statistics (date, municipality_code, reason) {
        date -> Text,
        municipality_code -> Text,
        reason -> Text,
        count -> BigInt,
    }
}

diesel::table! {
    provision_log (id) {
        id -> Text,
        at -> Text,
        recipient -> Text,
        affair -> Text,
        reason -> Text,
        query_kind -> Text,
        resident_code -> Nullable<Text>,
        items -> Text,
        outcome -> Text,
        detail -> Text,
    }
}

diesel::table! {
    idempotency_keys (idempotency_key) {
        idempotency_key -> Text,
        request -> Text,
        status -> Integer,
        response -> Text,
        created_at -> Text,
    }
}

diesel::table! {
    counters (name) {
        name -> Text,
        value -> BigInt,
    }
}

diesel::table! {
    mailbox (id) {
        id -> BigInt,
        recipient -> Text,
        message_id -> Text,
        payload -> Text,
        created_at -> Text,
        delivered_at -> Nullable<Text>,
    }
}

diesel::table! {
    transfers (transfer_id) {
        transfer_id -> Text,
        side -> Text,
        state -> Text,
        resident_code -> Text,
        from_municipality -> Text,
        to_municipality -> Text,
        planned_date -> Text,
        planned_address -> Text,
        record -> Text,
        pin_hash -> Text,
        pin_failures -> Integer,
        move_date -> Nullable<Text>,
        new_address -> Nullable<Text>,
        note -> Nullable<Text>,
        created_at -> Text,
        updated_at -> Text,
    }
}

diesel::table! {
    issuances (issuance_id) {
        issuance_id -> Text,
        side -> Text,
        state -> Text,
        resident_code -> Text,
        issuing_municipality -> Text,
        home_municipality -> Text,
        idempotency_key -> Nullable<Text>,
        request -> Text,
        answer -> Nullable<Text>,
        created_at -> Text,
        updated_at -> Text,
    }
}

diesel::table! {
    issuance_log (id) {
        id -> BigInt,
        at -> Text,
        issuance_id -> Text,
        side -> Text,
        resident_code -> Text,
        counterpart -> Text,
        outcome -> Text,
        detail -> Text,
    }
}

/// Every table, in creation order (used by the schema test).
pub const TABLES: &[&str] = &[
    "residents",
    "change_history",
    "outbox",
    "inbox",
    "daily_statistics",
    "provision_log",
    "idempotency_keys",
    "counters",
    "mailbox",
    "transfers",
    "issuances",
    "issuance_log",
];
