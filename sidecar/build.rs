//! Generates the gRPC services the sidecar serves to Kubernetes (proto/*.proto) with the protoc
//! that `protoc-bin-vendored` carries, so a build needs no system package for it.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: build scripts are single-threaded; nothing else reads the environment meanwhile.
    unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&["proto/k8s_kms_v2.proto", "proto/csi_provider_v1alpha1.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
