use switchboard::prelude::*;

#[on("room.message")]
async fn listener() -> u32 {
    1
}

fn main() {}
