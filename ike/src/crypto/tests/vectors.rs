//! Reading `ike/testdata/`: text files of `Name = value` blocks separated by blank lines,
//! `#` comments; Wycheproof JSON.

use std::path::PathBuf;

use crate::crypto::Prf;

pub(super) fn path(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(file)
}

pub(super) fn read(file: &str) -> String {
    let p = path(file);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// One block of `Name = value` lines.
pub(super) struct Block {
    file: String,
    line: usize,
    fields: Vec<(String, String)>,
}

impl Block {
    pub(super) fn get(&self, name: &str) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("{}:{}: no field {name:?}", self.file, self.line))
    }

    pub(super) fn hex(&self, name: &str) -> Vec<u8> {
        hex::decode(self.get(name))
            .unwrap_or_else(|e| panic!("{}:{}: {name}: {e}", self.file, self.line))
    }

    pub(super) fn prf(&self) -> Prf {
        match self.get("Prf") {
            "HMAC-SHA2-256" => Prf::HmacSha2_256,
            "HMAC-SHA2-384" => Prf::HmacSha2_384,
            "HMAC-SHA2-512" => Prf::HmacSha2_512,
            other => panic!("{}:{}: PRF {other}", self.file, self.line),
        }
    }

    pub(super) fn name(&self) -> String {
        format!(
            "{}:{} {}",
            self.file,
            self.line,
            self.fields
                .iter()
                .find(|(k, _)| k == "Name")
                .map_or("", |(_, v)| v.as_str())
        )
    }
}

/// The blocks of a text vector file.
pub(super) fn blocks(file: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut current: Option<Block> = None;
    for (i, line) in read(file).lines().enumerate() {
        let line = line.trim_end();
        if line.starts_with('#') {
            continue;
        }
        if line.is_empty() {
            out.extend(current.take());
            continue;
        }
        let (k, v) = line
            .split_once(" = ")
            .or_else(|| line.strip_suffix(" =").map(|k| (k, "")))
            .unwrap_or_else(|| panic!("{file}:{}: not `name = value`", i + 1));
        current
            .get_or_insert_with(|| Block {
                file: file.to_owned(),
                line: i + 1,
                fields: Vec::new(),
            })
            .fields
            .push((k.to_owned(), v.to_owned()));
    }
    out.extend(current);
    out
}

pub(super) fn json(file: &str) -> serde_json::Value {
    serde_json::from_str(&read(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

pub(super) fn hex_field(v: &serde_json::Value, name: &str) -> Vec<u8> {
    hex::decode(
        v[name]
            .as_str()
            .unwrap_or_else(|| panic!("no {name} in {v}")),
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"))
}
