//! Realistic, varied demo listings for `property-listings seed`. They are written through
//! the repository, like the admin forms, so the cache hooks fire: once per batch of up to
//! `BATCH` rows (one invalidation for `seed --count 1000`).

use rand::RngExt;
use rust_decimal::Decimal;

use crate::domain::{Description, Location, Price, Title};
use crate::error::AppError;
use crate::models::property::PropertyData;
use crate::models::repository::PropertyRepository;

/// Rows per INSERT: 4 parameters each, well under PostgreSQL's 65,535 per statement.
pub const BATCH: usize = 1000;

/// Writes `count` demo listings in batches of `BATCH`; returns how many were written.
pub async fn seed(properties: &PropertyRepository, count: usize) -> Result<usize, AppError> {
    let mut written = 0;
    for batch in demo_listings(count).chunks(BATCH) {
        written += properties.insert_many(batch.to_vec()).await?.len();
    }
    Ok(written)
}

const CITIES: &[(&str, u32)] = &[
    ("Austin, TX", 100),
    ("Boston, MA", 160),
    ("Chicago, IL", 95),
    ("Denver, CO", 110),
    ("Miami, FL", 130),
    ("Portland, OR", 105),
    ("Seattle, WA", 150),
    ("San Diego, CA", 170),
    ("Nashville, TN", 90),
    ("Raleigh, NC", 80),
    ("Minneapolis, MN", 75),
    ("Phoenix, AZ", 85),
    ("Brooklyn, NY", 190),
    ("Santa Fe, NM", 88),
    ("Savannah, GA", 72),
    ("Boise, ID", 70),
];

const KINDS: &[(&str, u32, u32)] = &[
    // (kind, base price in thousands, bedrooms up to)
    ("Studio Apartment", 180, 1),
    ("Loft", 320, 2),
    ("Condo", 290, 3),
    ("Townhouse", 420, 4),
    ("Bungalow", 380, 3),
    ("Family Home", 520, 5),
    ("Craftsman House", 560, 4),
    ("Victorian", 690, 6),
    ("Ranch House", 450, 4),
    ("Penthouse", 1450, 4),
    ("Cottage", 310, 2),
    ("Farmhouse", 610, 5),
    ("Duplex", 480, 4),
];

const ADJECTIVES: &[&str] = &[
    "Sunny",
    "Renovated",
    "Charming",
    "Modern",
    "Spacious",
    "Cozy",
    "Historic",
    "Bright",
    "Quiet",
    "Elegant",
    "Light-filled",
    "Updated",
    "Classic",
    "Airy",
];

const FEATURES: &[&str] = &[
    "an open-plan kitchen with quartz counters",
    "hardwood floors throughout",
    "a private backyard with mature trees",
    "a rooftop terrace with skyline views",
    "floor-to-ceiling windows",
    "a two-car garage",
    "a renovated primary bath",
    "in-unit laundry",
    "a wood-burning fireplace",
    "central air and new windows",
    "a chef's kitchen with a gas range",
    "a finished basement",
    "a wraparound porch",
    "solar panels and a heat pump",
];

const STREETS: &[&str] = &[
    "Maple Ave",
    "Oak St",
    "Cedar Ln",
    "Elm St",
    "Park Blvd",
    "Lakeview Dr",
    "Hillcrest Rd",
    "River Rd",
    "Main St",
    "Willow Way",
    "Sunset Blvd",
    "Harbor St",
];

/// `count` listings with varied titles, locations, prices and descriptions.
pub fn demo_listings(count: usize) -> Vec<PropertyData> {
    let mut rng = rand::rng();
    (0..count)
        .map(|_| {
            let (city, city_factor) = CITIES[rng.random_range(0..CITIES.len())];
            let (kind, base_k, max_beds) = KINDS[rng.random_range(0..KINDS.len())];
            let adjective = ADJECTIVES[rng.random_range(0..ADJECTIVES.len())];
            let beds = rng.random_range(1..=max_beds);
            let baths = rng.random_range(1..=beds.max(1));
            let sqft = 400 + beds * rng.random_range(350..650);
            let title = format!("{adjective} {beds}-Bedroom {kind}");
            let street = STREETS[rng.random_range(0..STREETS.len())];
            let number = rng.random_range(10..2400);
            let f1 = FEATURES[rng.random_range(0..FEATURES.len())];
            let f2 = FEATURES[rng.random_range(0..FEATURES.len())];
            let plural = |n: u32, word: &str| {
                if n == 1 {
                    format!("1 {word}")
                } else {
                    format!("{n} {word}s")
                }
            };
            let description = format!(
                "{adjective} {kind_lower} at {number} {street}, {city}. {bedrooms}, {bathrooms} \
                 and about {sqft} sq ft, with {f1}{also}. Close to shops, parks and transit; \
                 available now.",
                bedrooms = plural(beds, "bedroom"),
                bathrooms = plural(baths, "bathroom"),
                kind_lower = kind.to_lowercase(),
                also = if f1 == f2 {
                    String::new()
                } else {
                    format!(" and {f2}")
                },
            );
            // Price: base × city factor × a ±20 % spread, rounded to the nearest 500.
            let spread = rng.random_range(80..=120);
            let dollars = u64::from(base_k) * 1000 * u64::from(city_factor) / 100 * spread / 100;
            let dollars = (dollars / 500).max(1) * 500;
            let cents = if rng.random_range(0..10) == 0 { 99 } else { 0 };
            let price = Price::parse(&format!("{dollars}.{cents:02}"))
                .or_else(|_| Price::parse(&Decimal::from(dollars.min(99_999_999)).to_string()))
                .expect("seed prices are in range");
            PropertyData::new(
                Title::parse(&title).expect("seed titles are valid"),
                Description::parse(&description).expect("seed descriptions are valid"),
                price,
                Location::parse(city).expect("seed locations are valid"),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::demo_listings;

    #[test]
    fn demo_listings_are_varied() {
        let listings = demo_listings(50);
        assert_eq!(listings.len(), 50);
        let titles: std::collections::HashSet<_> = listings.iter().map(|l| l.title()).collect();
        assert!(titles.len() > 25, "only {} distinct titles", titles.len());
    }
}
