//! Realistic, varied demo listings for `property-listings seed`. They are written through
//! the repository, like the admin forms, so the cache hooks fire: once per batch of up to
//! `BATCH` rows (one invalidation for `seed --count 1000`). Each gets one to four photos
//! from a small set of pictures drawn by the program (`demo_photos`: no network), run
//! through the same re-encoding as uploads; content addressing stores each picture once
//! however many listings show it (and across runs of `seed`: the drawings never change).

use rand::RngExt;
use rust_decimal::Decimal;

use crate::domain::{Description, Location, Price, Title};
use crate::error::AppError;
use crate::models::photo;
use crate::models::property::PropertyData;
use crate::models::repository::PropertyRepository;
use crate::photos::process;

/// Rows per INSERT: 4 parameters each, well under PostgreSQL's 65,535 per statement.
pub const BATCH: usize = 1000;

/// How many distinct demo pictures there are.
pub const DEMO_PICTURES: usize = 10;

/// Writes `count` demo listings in batches of `BATCH`, with photos; returns how many
/// were written.
pub async fn seed(properties: &PropertyRepository, count: usize) -> Result<usize, AppError> {
    let hashes = store_demo_photos(properties).await?;
    let mut rng = rand::rng();
    let mut written = 0;
    for batch in demo_listings(count).chunks(BATCH) {
        let photos = batch
            .iter()
            .map(|_| {
                let n = rng.random_range(1..=4);
                let first = rng.random_range(0..hashes.len());
                (0..n)
                    .map(|i| hashes[(first + i * 3) % hashes.len()].clone())
                    .collect()
            })
            .collect();
        written += properties
            .insert_many_with_photos(batch.to_vec(), photos)
            .await?
            .len();
    }
    Ok(written)
}

/// Draws, re-encodes and stores the demo pictures (a no-op for those already stored);
/// their content hashes.
async fn store_demo_photos(properties: &PropertyRepository) -> Result<Vec<String>, AppError> {
    let processed = actix_web::web::block(|| {
        (0..DEMO_PICTURES)
            .map(|i| process::process(&format!("demo {i}"), &demo_photo(i)))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| AppError::Internal(anyhow::anyhow!("drawing demo photos: {e}")))?
    .map_err(|e| AppError::Internal(anyhow::anyhow!("demo photo: {e}")))?;
    let hashes = processed.iter().map(|p| p.hash.clone()).collect();
    crate::db::run(properties.pool(), move |conn| {
        for p in &processed {
            photo::store(conn, p)?;
        }
        Ok(())
    })
    .await?;
    Ok(hashes)
}

/// Demo picture `i` (any `i`; `DEMO_PICTURES` distinct ones): a house under a sky, drawn
/// in colours and proportions that vary with `i`, as a PNG of 1280 × 853.
pub fn demo_photo(i: usize) -> Vec<u8> {
    use image::{ImageFormat, Rgb, RgbImage};
    const W: u32 = 1280;
    const H: u32 = 853;
    let i = i % DEMO_PICTURES;
    let pick = |list: &[[u8; 3]], k: usize| list[(i * k + i / 2) % list.len()];
    let skies = [
        [120, 170, 230],
        [250, 170, 120],
        [90, 140, 200],
        [180, 210, 240],
        [240, 200, 160],
    ];
    let walls = [
        [236, 228, 210],
        [200, 90, 70],
        [120, 150, 170],
        [250, 240, 200],
        [160, 130, 100],
        [90, 120, 90],
        [230, 200, 210],
    ];
    let roofs = [[90, 60, 50], [60, 60, 70], [150, 70, 50], [40, 70, 60]];
    let grass = [[90, 150, 70], [120, 160, 80], [70, 120, 60], [150, 150, 90]];
    let (sky, wall, roof, lawn) = (
        pick(&skies, 1),
        pick(&walls, 3),
        pick(&roofs, 5),
        pick(&grass, 7),
    );
    let horizon = H * (55 + (i as u32 * 7) % 15) / 100;
    let house_w = W * (38 + (i as u32 * 11) % 20) / 100;
    let house_x = W * (10 + (i as u32 * 13) % 40) / 100;
    let house_h = H * (22 + (i as u32 * 5) % 12) / 100;
    let roof_h = H * (12 + (i as u32 * 3) % 10) / 100;
    let (top, base) = (horizon + H / 12 - house_h, horizon + H / 12);
    let mut img = RgbImage::from_fn(W, H, |_x, y| {
        if y < horizon {
            // Sky, lighter towards the horizon.
            let t = y * 255 / horizon;
            Rgb(sky.map(|c| (u32::from(c) + (255 - u32::from(c)) * t / 400) as u8))
        } else {
            let shade = (y - horizon) * 60 / (H - horizon);
            Rgb(lawn.map(|c| u32::from(c).saturating_sub(shade) as u8))
        }
    });
    let mut fill = |x0: u32, y0: u32, x1: u32, y1: u32, colour: [u8; 3]| {
        for y in y0..y1.min(H) {
            for x in x0..x1.min(W) {
                img.put_pixel(x, y, Rgb(colour));
            }
        }
    };
    // Walls, door and windows.
    fill(house_x, top, house_x + house_w, base, wall);
    let door_w = house_w / 8;
    let door_x = house_x + house_w / 2 - door_w / 2 + (i as u32 % 3) * door_w;
    fill(door_x, base - house_h * 6 / 10, door_x + door_w, base, roof);
    let windows = 2 + i as u32 % 3;
    for k in 0..windows {
        let wx = house_x + house_w * (2 * k + 1) / (2 * windows + 1) - house_w / 30;
        if wx + house_w / 10 < door_x || wx > door_x + door_w {
            fill(
                wx,
                top + house_h / 5,
                wx + house_w / 10,
                top + house_h / 2,
                [210, 230, 245],
            );
        }
    }
    // The roof: a triangle over the walls, overhanging a little.
    for y in 0..roof_h {
        let half = (house_w / 2 + house_w / 16) * (y + 1) / roof_h;
        let mid = house_x + house_w / 2;
        fill(
            mid - half.min(mid),
            top - roof_h + y,
            mid + half,
            top - roof_h + y + 1,
            roof,
        );
    }
    // A tree or two.
    for k in 0..(1 + i % 2) as u32 {
        let tx = (house_x + house_w + W / 12 + k * W / 7) % (W - W / 10);
        fill(
            tx + W / 60,
            horizon - H / 20,
            tx + W / 60 + W / 80,
            horizon + H / 10,
            [100, 70, 40],
        );
        fill(
            tx,
            horizon - H / 4,
            tx + W / 20,
            horizon - H / 20,
            [50, 110 + (k * 30) as u8, 60],
        );
    }
    let mut out = Vec::new();
    // Encoding an in-memory RGB image to a Vec cannot fail.
    let _ = img.write_to(&mut std::io::Cursor::new(&mut out), ImageFormat::Png);
    out
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
    fn demo_photos_are_distinct_valid_pictures() {
        let hashes: std::collections::HashSet<_> = (0..super::DEMO_PICTURES)
            .map(|i| {
                let png = super::demo_photo(i);
                assert!(crate::photos::process::process("demo", &png).is_ok());
                crate::photos::process::content_hash(&png)
            })
            .collect();
        assert_eq!(hashes.len(), super::DEMO_PICTURES);
    }

    #[test]
    fn demo_listings_are_varied() {
        let listings = demo_listings(50);
        assert_eq!(listings.len(), 50);
        let titles: std::collections::HashSet<_> = listings.iter().map(|l| l.title()).collect();
        assert!(titles.len() > 25, "only {} distinct titles", titles.len());
    }
}
