use switchboard::prelude::*;

#[once("connection.init", times = 2)]
async fn welcome() {}

fn main() {}
