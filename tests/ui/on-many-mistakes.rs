use switchboard::prelude::*;

#[on("room message", colour = "red", priority = urgent)]
async fn listener<T>(_payload: T) {}

fn main() {}
