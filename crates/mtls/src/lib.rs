//! gatehouse-mtls
