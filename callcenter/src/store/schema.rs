//! The diesel table definitions (checked against the migrations by a test on both backends).

diesel::table! {
    tickets (id) {
        id -> BigInt,
        kind -> Text,
        state -> Text,
        org_code -> Nullable<Text>,
        reporter -> Text,
        channel -> Text,
        subject -> Text,
        body -> Text,
        category -> Nullable<Text>,
        nodes -> Text,
        answer -> Nullable<Text>,
        recovery -> Nullable<Text>,
        filed_by -> Text,
        created_at -> BigInt,
        first_answer_at -> Nullable<BigInt>,
        updated_at -> BigInt,
    }
}

diesel::table! {
    ticket_history (id) {
        id -> BigInt,
        ticket_id -> BigInt,
        at -> BigInt,
        actor -> Text,
        action -> Text,
        from_state -> Nullable<Text>,
        to_state -> Nullable<Text>,
        detail -> Text,
    }
}

diesel::table! {
    alert_links (fingerprint, starts_at) {
        fingerprint -> Text,
        starts_at -> BigInt,
        ticket_id -> BigInt,
        resolved_at -> Nullable<BigInt>,
    }
}

diesel::joinable!(ticket_history -> tickets (ticket_id));
diesel::joinable!(alert_links -> tickets (ticket_id));
diesel::allow_tables_to_appear_in_same_query!(tickets, ticket_history, alert_links);
