//! gatehouse-bound
