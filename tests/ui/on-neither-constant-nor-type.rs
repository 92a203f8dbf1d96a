use switchboard::prelude::*;

#[on(room_message)]
async fn listener() {}

fn main() {}
