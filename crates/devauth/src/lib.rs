//! gatehouse-devauth
