//! Values parsed from raw user input. A value of one of these types is valid by
//! construction: forms and query strings hold `String`s, and `parse` is the only door.

mod id;
mod price;
mod text;

pub use id::parse_id;

pub use price::{Money, Price};
pub use text::{Description, Location, Title};
