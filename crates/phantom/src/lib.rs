//! gatehouse-phantom
