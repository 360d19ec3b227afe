//! Configuration (placeholder, owned by the service work).
