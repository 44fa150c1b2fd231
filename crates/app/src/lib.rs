//! gatehouse-app
