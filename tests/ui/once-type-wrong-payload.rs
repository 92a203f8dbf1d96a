use serde::{Deserialize, Serialize};
use switchboard::prelude::*;

#[derive(Event, Clone, Serialize, Deserialize)]
#[event("connection.init")]
struct Init {
    id: u64,
}

#[once(Init)]
async fn first(_app: App, _id: u64) {}

fn main() {}
