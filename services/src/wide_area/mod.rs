//! The wide-area services between CSs: the transfer-out/in special procedure and the
//! wide-area issuance of resident-record copies.

pub mod issuance;
pub mod transfer;
