pub mod clean;
pub mod land;
