use switchboard::prelude::*;

#[on("salle.événement")]
async fn listener() {}

fn main() {}
