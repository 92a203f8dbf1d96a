use switchboard::prelude::*;

struct Chat;

impl Chat {
    #[on("room.message")]
    async fn listener(&self) {}
}

fn main() {}
