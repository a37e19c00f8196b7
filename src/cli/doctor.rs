//! `chatforge doctor`: what ONNX Runtime set-up this process would serve
//! with, as a user debugging a deployment needs to see it.

use std::path::Path;

use anyhow::Result;
use chatforge::config::Config;
use chatforge::export::{Dim, Elem, GraphBuilder, model};
use chatforge::runtime::{self, Provider, library};
use prost::Message;

pub fn run(cfg: &Config, bundle: Option<&Path>) -> Result<()> {
    let rt = &cfg.runtime;
    match library::locate() {
        Ok((path, source)) => println!(
            "ONNX Runtime library: {} (found via {source})",
            path.display()
        ),
        Err(e) => {
            println!("ONNX Runtime library: NOT FOUND");
            return Err(e.into());
        }
    }
    let lib = library::load()?;
    println!(
        "ONNX Runtime version: {} ({})",
        lib.version.as_deref().unwrap_or("unknown"),
        lib.build_info
    );
    let compiled: Vec<String> = [Provider::Tensorrt, Provider::Cuda, Provider::Cpu]
        .into_iter()
        .map(|p| match p.compiled_in() {
            Ok(true) => format!("{} yes", p.name()),
            Ok(false) => format!("{} no", p.name()),
            Err(e) => format!("{} ? ({e})", p.name()),
        })
        .collect();
    println!("providers in this build: {}", compiled.join(", "));
    let wanted: Vec<&str> = rt.providers.iter().map(|p| p.name()).collect();
    println!(
        "providers configured: {} (strict: {})",
        wanted.join(" > "),
        rt.strict
    );
    let threads = if rt.intra_threads == 0 {
        format!(
            "ONNX Runtime default (one per core: {})",
            rt.intra_threads_in_use()
        )
    } else {
        rt.intra_threads.to_string()
    };
    println!("intra-op threads: {threads}");
    println!(
        "precision: {} (generation runs a bundle's {})",
        rt.precision.name(),
        rt.precision.file_name()
    );
    // A one-node graph shows which provider actually starts.
    let mut g = GraphBuilder::new();
    g.input("x", Elem::F32, &[Dim::from("n")]);
    g.op_into("Relu", &["x"], &["y"], vec![]);
    g.output("y", Elem::F32, &[Dim::from("n")]);
    let probe = model(
        g.finish("doctor_probe"),
        chatforge::export::OPSET,
        env!("CARGO_PKG_VERSION"),
    );
    let loaded = runtime::open_memory(rt, &probe.encode_to_vec(), "probe model")?;
    println!("provider in use: {}", loaded.provider.name());
    if let Some(dir) = bundle {
        let generator = runtime::Generator::open(dir, rt)?;
        let c = generator.decoder().config();
        println!(
            "bundle {}: {} loads on {} ({} layers, {} heads, width {}, context {}, vocab {})",
            dir.display(),
            rt.precision.file_name(),
            generator.decoder().provider().name(),
            c.n_layer,
            c.n_head,
            c.n_embd,
            c.n_positions,
            c.vocab_size
        );
    }
    Ok(())
}
