use switchboard::prelude::*;

#[on]
async fn listener() {}

fn main() {}
