//! Prints the DeployFlow CRD. `cargo run -p triton-controller --bin crdgen > crds/deployflows.yaml`
fn main() {
    print!("{}", triton_controller::crdgen::crd_yaml());
}
