use switchboard::prelude::*;

#[on("room.message")]
async fn listener(_msg: impl serde::de::DeserializeOwned) {}

fn main() {}
