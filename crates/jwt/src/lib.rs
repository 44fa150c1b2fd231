//! gatehouse-jwt
