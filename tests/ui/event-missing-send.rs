use switchboard::prelude::*;

// An event is handed between tasks: an `Rc` field cannot be.
#[derive(Event, Clone, serde::Serialize)]
#[event("room.message")]
struct RoomMessage {
    #[serde(skip)]
    shared: std::rc::Rc<u8>,
}

fn main() {}
