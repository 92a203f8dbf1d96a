use switchboard::prelude::*;

#[on("chat.a**b")]
async fn listener() {}

fn main() {}
