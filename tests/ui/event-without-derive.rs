// `#[event]` is the derive's attribute: without `#[derive(Event)]` it is not one.
#[event("room.message")]
#[derive(Clone)]
struct RoomMessage;

fn main() {
    let _ = RoomMessage;
}
