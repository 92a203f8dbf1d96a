use switchboard::prelude::*;

#[ws_route("/chat")]
struct Handler;

fn main() {}
