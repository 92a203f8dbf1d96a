use switchboard::prelude::*;

#[on("message.received", namespace = "web..socket")]
async fn listener() {}

fn main() {}
