use switchboard::prelude::*;

#[on("message.received", namespace = "")]
async fn listener() {}

fn main() {}
