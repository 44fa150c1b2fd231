//! gatehouse-testkit
