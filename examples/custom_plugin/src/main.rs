//! A gateway binary with every built-in plugin plus `tenant-router`.

fn main() {
    gatehouse::Gateway::builder()
        .plugin(tenant_gateway::factory())
        .run();
}
