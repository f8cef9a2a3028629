//! Diesel models (each owns its queries), the model-hook seam, and the repository that
//! is the one write path for listings (and their photos).

pub mod admin_user;
pub mod hooks;
pub mod photo;
pub mod property;
pub mod repository;
pub mod sign_in_attempt;
