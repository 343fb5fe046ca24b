//! The PostgreSQL ledger.
