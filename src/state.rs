//! The one piece of shared state every handler gets (`web::Data<AppState>`).

use crate::auth::password::PasswordChecks;
use crate::auth::throttle::LoginThrottle;
use crate::cache::Cache;
use crate::config::Settings;
use std::sync::Arc;

use crate::db::{PgPool, Replicas};
use crate::models::repository::PropertyRepository;
use crate::photos::Photos;
use crate::telemetry::latency::RequestLatency;

pub struct AppState {
    pub settings: Settings,
    pub db: PgPool,
    /// Streaming replicas cache refills may read (`db::replicas`; possibly none).
    pub replicas: Arc<Replicas>,
    pub cache: Cache,
    pub properties: PropertyRepository,
    pub login_throttle: LoginThrottle,
    pub request_latency: RequestLatency,
    /// The bound on sign-in password checks running at once.
    pub password_checks: PasswordChecks,
    /// Upload re-encoding threads and the `/media/` bytes kept in memory.
    pub photos: Photos,
}
