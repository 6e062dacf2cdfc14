//! Model presets: the target matrices of each model, with their real shapes.
//!
//! Shapes are `out x in` (PyTorch's `nn.Linear.weight`, `N x M`). Attention with grouped-query
//! heads has `k_proj`/`v_proj` of `kv_heads * head_dim` rows.

/// One kind of target matrix, present `per_layer` times in each layer of its stack.
#[derive(Clone, Debug)]
pub struct Target {
    pub name: String,
    pub n: usize,
    pub m: usize,
}

/// A stack of identical layers (a decoder-only model has one; T5 has an encoder and a decoder).
#[derive(Clone, Debug)]
pub struct Stack {
    pub name: &'static str,
    pub layers: usize,
    pub targets: Vec<Target>,
}

#[derive(Clone, Debug)]
pub struct Model {
    pub name: String,
    pub stacks: Vec<Stack>,
    pub note: String,
}

pub const PRESETS: &[&str] = &["llama-3.1-8b", "llama-2-7b", "mistral-7b", "qwen2.5-7b", "t5-large"];

fn t(name: &str, n: usize, m: usize) -> Target {
    Target { name: name.into(), n, m }
}

/// A decoder-only transformer: q/k/v/o attention with `kv_heads` key/value heads, gate/up/down MLP.
fn decoder(name: &str, hidden: usize, inter: usize, layers: usize, heads: usize, kv_heads: usize) -> Model {
    let head_dim = hidden / heads;
    let kv = kv_heads * head_dim;
    Model {
        name: name.into(),
        stacks: vec![Stack {
            name: "layers",
            layers,
            targets: vec![
                t("q_proj", hidden, hidden),
                t("k_proj", kv, hidden),
                t("v_proj", kv, hidden),
                t("o_proj", hidden, hidden),
                t("gate_proj", inter, hidden),
                t("up_proj", inter, hidden),
                t("down_proj", hidden, inter),
            ],
        }],
        note: format!("hidden {hidden}, intermediate {inter}, {layers} layers, {heads} heads, {kv_heads} KV heads, head dim {head_dim}"),
    }
}

pub fn preset(name: &str) -> Option<Model> {
    Some(match name.to_ascii_lowercase().as_str() {
        "llama-3.1-8b" | "llama3.1-8b" | "llama-3-8b" => decoder("llama-3.1-8b", 4096, 14336, 32, 32, 8),
        "llama-2-7b" | "llama2-7b" => decoder("llama-2-7b", 4096, 11008, 32, 32, 32),
        "mistral-7b" => decoder("mistral-7b", 4096, 14336, 32, 32, 8),
        "qwen2.5-7b" | "qwen-2.5-7b" => decoder("qwen2.5-7b", 3584, 18944, 28, 28, 4),
        "t5-large" => {
            let (d, ff) = (1024, 4096);
            let attn = |p: &str| ["q", "k", "v", "o"].iter().map(|x| t(&format!("{p}.{x}"), d, d)).collect::<Vec<_>>();
            let mut enc = attn("self_attn");
            enc.extend([t("wi", ff, d), t("wo", d, ff)]);
            let mut dec = attn("self_attn");
            dec.extend(attn("cross_attn"));
            dec.extend([t("wi", ff, d), t("wo", d, ff)]);
            Model {
                name: "t5-large".into(),
                stacks: vec![
                    Stack { name: "encoder", layers: 24, targets: enc },
                    Stack { name: "decoder", layers: 24, targets: dec },
                ],
                note: "d_model 1024, d_ff 4096, 24 encoder + 24 decoder layers, 16 heads x 64".into(),
            }
        }
        _ => return None,
    })
}

/// A model made of the given shapes, each one target in one layer.
pub fn custom(shapes: &[(usize, usize)]) -> Model {
    Model {
        name: "custom".into(),
        stacks: vec![Stack {
            name: "shapes",
            layers: 1,
            targets: shapes.iter().map(|&(n, m)| t(&format!("{n}x{m}"), n, m)).collect(),
        }],
        note: "custom shapes, one matrix each".into(),
    }
}

impl Model {
    /// Keep at most `layers` layers of each stack.
    pub fn limit_layers(&mut self, layers: usize) {
        for s in &mut self.stacks {
            s.layers = s.layers.min(layers);
        }
    }

    /// Divide every dimension by `f` (at least 8): a scaled stand-in for smoke runs.
    pub fn scaled(&self, f: usize) -> Model {
        let mut m = self.clone();
        for s in &mut m.stacks {
            for t in &mut s.targets {
                t.n = (t.n / f).max(8);
                t.m = (t.m / f).max(8);
            }
        }
        m
    }

    /// Same-shape targets grouped: `(n, m, count, names)` in order of first appearance.
    pub fn groups(&self) -> Vec<(usize, usize, usize, Vec<String>)> {
        let mut g: Vec<(usize, usize, usize, Vec<String>)> = vec![];
        for s in &self.stacks {
            for t in &s.targets {
                let label = if self.stacks.len() > 1 { format!("{}.{}", s.name, t.name) } else { t.name.clone() };
                match g.iter_mut().find(|x| x.0 == t.n && x.1 == t.m) {
                    Some(x) => {
                        x.2 += s.layers;
                        if !x.3.contains(&label) {
                            x.3.push(label);
                        }
                    }
                    None => g.push((t.n, t.m, s.layers, vec![label])),
                }
            }
        }
        g.retain(|x| x.2 > 0);
        g
    }

    /// Number of target matrices.
    pub fn count(&self) -> usize {
        self.stacks.iter().map(|s| s.layers * s.targets.len()).sum()
    }
}
