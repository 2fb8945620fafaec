//! The `gatehouse` binary: the gateway with the built-in plugins.

fn main() {
    gatehouse::Gateway::builder().run();
}
