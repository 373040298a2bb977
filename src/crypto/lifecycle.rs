//! The life of a signing key: *next* (published, not signing), *current* (signing),
//! *retired* (still published until every token it signed has expired), then gone.
//!
//! The stage of each key file is kept in `keys.json` beside the keys, so every replica
//! that shares the keys directory reads the same answer to "which key signs?". Key files
//! without an entry (placed by hand) are published, and the newest of them signs when no
//! key is marked current; `load_reporting` names them so that the server can say so.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::keys::{self, KeyRing, SigningKey};

pub const STATE_FILE: &str = "keys.json";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Next,
    Current,
    Retired,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub stage: Stage,
    pub published_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activated_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<i64>,
}

/// The stages of the keys in one directory, by file name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    pub keys: BTreeMap<String, KeyRecord>,
}

/// How long keys stay published and trusted, in seconds.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// A retired key stays published this long: the longest an access token it signed
    /// can live, plus clock leeway.
    pub retire_after: i64,
    /// A next key must have been published this long before it may sign: the JWKS
    /// cache lifetime plus how long servers take to notice a new key.
    pub publish_before_signing: i64,
}

pub(crate) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl Lifecycle {
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(STATE_FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not a valid key state file", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes the state atomically (temp file, then rename), so a reader never sees half.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let path = dir.join(STATE_FILE);
        let tmp = dir.join(format!(".{STATE_FILE}.tmp"));
        let _ = fs::remove_file(&tmp);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        file.write_all(&serde_json::to_vec_pretty(self)?)?;
        file.sync_all()?;
        fs::rename(&tmp, &path).with_context(|| format!("cannot replace {}", path.display()))?;
        Ok(())
    }

    pub fn record(&self, key: &SigningKey) -> Option<&KeyRecord> {
        self.keys.get(&file_name(&key.path))
    }
}

/// Which key signs and which are published, at `now`.
pub fn assemble(
    mut found: Vec<SigningKey>,
    life: &Lifecycle,
    now: DateTime<Utc>,
    timing: Timing,
) -> anyhow::Result<KeyRing> {
    found.sort_by(|a, b| a.path.file_name().cmp(&b.path.file_name()));
    let now = now.timestamp();
    let stage = |k: &SigningKey| life.record(k).map(|r| r.stage);
    let signer_index = found
        .iter()
        .enumerate()
        .filter(|(_, k)| stage(k) == Some(Stage::Current))
        .max_by_key(|(_, k)| life.record(k).and_then(|r| r.activated_at))
        .or_else(|| found.iter().enumerate().rfind(|(_, k)| stage(k).is_none()))
        .or_else(|| {
            found
                .iter()
                .enumerate()
                .rfind(|(_, k)| stage(k) == Some(Stage::Next))
        })
        .map(|(i, _)| i)
        .context("no key can sign: every key in the keys directory is retired")?;
    let mut signer = None;
    let mut published = Vec::new();
    for (i, key) in found.into_iter().enumerate() {
        let keep = match life.record(&key) {
            _ if i == signer_index => true,
            None => true,
            Some(r) => match r.stage {
                Stage::Next | Stage::Current => true,
                Stage::Retired => r.retired_at.unwrap_or(0) + timing.retire_after > now,
            },
        };
        if i == signer_index {
            signer = Some(key);
        } else if keep {
            published.push(key);
        }
    }
    let signer = signer.context("no key can sign")?;
    KeyRing::from_parts(signer, published)
}

/// Loads the directory's keys and stages into the ring in force at `now`.
pub fn load(dir: &Path, now: DateTime<Utc>, timing: Timing) -> anyhow::Result<KeyRing> {
    load_reporting(dir, now, timing).map(|(ring, _)| ring)
}

/// A key file that `keys.json` does not know: copied in rather than made by
/// `gatehouse keys generate`. It is trusted like any other key, so it must not go
/// unnoticed: a planted key signs tokens that every verifier accepts.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HandPlaced {
    pub file: String,
    pub kid: String,
}

/// `load`, and the key files it trusted without a record in `keys.json`.
pub fn load_reporting(
    dir: &Path,
    now: DateTime<Utc>,
    timing: Timing,
) -> anyhow::Result<(KeyRing, Vec<HandPlaced>)> {
    assemble_reporting(keys::load_dir(dir)?, &Lifecycle::load(dir)?, now, timing)
}

/// `assemble`, and the keys it trusted without a record in `life`.
pub fn assemble_reporting(
    found: Vec<SigningKey>,
    life: &Lifecycle,
    now: DateTime<Utc>,
    timing: Timing,
) -> anyhow::Result<(KeyRing, Vec<HandPlaced>)> {
    let hand_placed = found
        .iter()
        .filter(|k| life.record(k).is_none())
        .map(|k| HandPlaced {
            file: file_name(&k.path),
            kid: k.kid.clone(),
        })
        .collect();
    Ok((assemble(found, life, now, timing)?, hand_placed))
}

/// Generates a key. The directory's first key signs at once; later ones start as *next*.
pub fn generate(dir: &Path, now: DateTime<Utc>) -> anyhow::Result<(PathBuf, Stage)> {
    let first = keys::load_dir(dir).map(|k| k.is_empty()).unwrap_or(true);
    let mut life = Lifecycle::load(dir).unwrap_or_default();
    let path = keys::generate_into(dir, now)?;
    let stage = life.add(&file_name(&path), first, now);
    life.save(dir)?;
    Ok((path, stage))
}

impl Lifecycle {
    /// Records a new key: the ring's first key signs at once; later ones start as *next*.
    pub fn add(&mut self, name: &str, first: bool, now: DateTime<Utc>) -> Stage {
        let stage = if first { Stage::Current } else { Stage::Next };
        self.keys.insert(
            name.to_owned(),
            KeyRecord {
                stage,
                published_at: now.timestamp(),
                activated_at: first.then_some(now.timestamp()),
                retired_at: None,
            },
        );
        stage
    }
}

/// Promotes the oldest next key to current and retires the current one. Refuses while
/// the next key may still be missing from verifiers' cached JWKS, unless `force`.
pub fn rotate(
    dir: &Path,
    now: DateTime<Utc>,
    timing: Timing,
    force: bool,
) -> anyhow::Result<(Option<String>, String)> {
    let mut life = Lifecycle::load(dir)?;
    let rotated = rotate_in(keys::load_dir(dir)?, &mut life, now, timing, force)?;
    life.save(dir)?;
    Ok(rotated)
}

/// `rotate` on keys and stages in memory; the caller stores `life`.
pub fn rotate_in(
    found: Vec<SigningKey>,
    life: &mut Lifecycle,
    now: DateTime<Utc>,
    timing: Timing,
    force: bool,
) -> anyhow::Result<(Option<String>, String)> {
    let ring = assemble(found, life, now, timing)?;
    let old_signer = file_name(&ring.signer().path);
    let next = ring
        .keys()
        .iter()
        .filter_map(|k| {
            let name = file_name(&k.path);
            let r = life.keys.get(&name)?;
            (r.stage == Stage::Next).then(|| (name, r.published_at, k.kid.clone()))
        })
        .min_by_key(|(name, published, _)| (*published, name.clone()));
    let Some((next_name, published_at, next_kid)) = next else {
        anyhow::bail!("there is no next key: run `gatehouse keys generate` first");
    };
    let ready_at = published_at + timing.publish_before_signing;
    if !force && now.timestamp() < ready_at {
        anyhow::bail!(
            "the next key {next_kid} has been published for {}s; wait {}s more so every \
             verifier's cached JWKS holds it (or pass --force)",
            now.timestamp() - published_at,
            ready_at - now.timestamp()
        );
    }
    let now_ts = now.timestamp();
    let old_kid = Some(ring.signer().kid.clone());
    for (name, record) in life.keys.iter_mut() {
        if record.stage == Stage::Current && *name != next_name {
            record.stage = Stage::Retired;
            record.retired_at = Some(now_ts);
        }
    }
    // A hand-placed signer has no entry yet: record its retirement too.
    life.keys
        .entry(old_signer)
        .and_modify(|r| {
            if r.stage != Stage::Retired {
                r.stage = Stage::Retired;
                r.retired_at = Some(now_ts);
            }
        })
        .or_insert(KeyRecord {
            stage: Stage::Retired,
            published_at: now_ts,
            activated_at: None,
            retired_at: Some(now_ts),
        });
    if let Some(r) = life.keys.get_mut(&next_name) {
        r.stage = Stage::Current;
        r.activated_at = Some(now_ts);
    }
    Ok((old_kid, next_kid))
}

/// Retires a key that does not sign (a next key no longer wanted, or a retired key whose
/// publication should end now with `immediately`).
pub fn retire(
    dir: &Path,
    kid: &str,
    now: DateTime<Utc>,
    timing: Timing,
    immediately: bool,
) -> anyhow::Result<()> {
    let mut life = Lifecycle::load(dir)?;
    retire_in(
        keys::load_dir(dir)?,
        &mut life,
        kid,
        now,
        timing,
        immediately,
    )?;
    life.save(dir)
}

/// `retire` on keys and stages in memory; the caller stores `life`.
pub fn retire_in(
    found: Vec<SigningKey>,
    life: &mut Lifecycle,
    kid: &str,
    now: DateTime<Utc>,
    timing: Timing,
    immediately: bool,
) -> anyhow::Result<()> {
    let name = found
        .iter()
        .find(|k| k.kid == kid)
        .map(|k| file_name(&k.path))
        .with_context(|| format!("no key with kid {kid}"))?;
    let ring = assemble(found, life, now, timing)?;
    anyhow::ensure!(
        ring.signer().kid != kid,
        "{kid} is the signing key: rotate to a next key first"
    );
    let at = if immediately {
        now.timestamp() - timing.retire_after
    } else {
        now.timestamp()
    };
    let entry = life.keys.entry(name).or_insert(KeyRecord {
        stage: Stage::Retired,
        published_at: at,
        activated_at: None,
        retired_at: Some(at),
    });
    entry.stage = Stage::Retired;
    entry.retired_at = Some(entry.retired_at.map_or(at, |r| r.min(at)));
    Ok(())
}

/// One published key as an operator sees it, times in unix seconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyStatus {
    pub kid: String,
    /// `Current` for the key this ring signs with, whatever `keys.json` says; a
    /// hand-placed key that does not sign is published and waiting, so `Next`.
    pub stage: Stage,
    /// `keys.json` does not know the file (see [`HandPlaced`]).
    pub hand_placed: bool,
    pub published_at: Option<i64>,
    pub activated_at: Option<i64>,
    pub retired_at: Option<i64>,
    /// When a retired key leaves the JWKS.
    pub unpublish_at: Option<i64>,
}

/// The stage of every key `ring` publishes, signer first. Stages come from the ring in
/// force, not from `keys.json` alone, because the ring is what actually signs here.
pub fn status(ring: &KeyRing, life: &Lifecycle, timing: Timing) -> Vec<KeyStatus> {
    let signer = &ring.signer().kid;
    ring.keys()
        .iter()
        .map(|key| {
            let record = life.record(key);
            let stage = if &key.kid == signer {
                Stage::Current
            } else {
                record.map_or(Stage::Next, |r| r.stage)
            };
            let retired_at = record.and_then(|r| r.retired_at);
            KeyStatus {
                kid: key.kid.clone(),
                stage,
                hand_placed: record.is_none(),
                published_at: record.map(|r| r.published_at),
                activated_at: record.and_then(|r| r.activated_at),
                retired_at,
                unpublish_at: retired_at
                    .filter(|_| stage == Stage::Retired)
                    .map(|r| r + timing.retire_after),
            }
        })
        .collect()
}

/// One line per key for `gatehouse keys list`.
pub fn describe(
    dir: &Path,
    now: DateTime<Utc>,
    timing: Timing,
) -> anyhow::Result<Vec<(String, String, usize, PathBuf)>> {
    describe_in(keys::load_dir(dir)?, &Lifecycle::load(dir)?, now, timing)
}

/// `describe` for keys and stages in memory.
pub fn describe_in(
    found: Vec<SigningKey>,
    life: &Lifecycle,
    now: DateTime<Utc>,
    timing: Timing,
) -> anyhow::Result<Vec<(String, String, usize, PathBuf)>> {
    let listed: Vec<(String, usize, PathBuf, Option<KeyRecord>)> = found
        .iter()
        .map(|k| {
            (
                k.kid.clone(),
                k.bits(),
                k.path.clone(),
                life.record(k).cloned(),
            )
        })
        .collect();
    let ring = assemble(found, life, now, timing)?;
    let published: Vec<String> = ring.keys().iter().map(|k| k.kid.clone()).collect();
    let mut out = Vec::new();
    for (kid, bits, path, record) in listed {
        let state = if kid == ring.signer().kid {
            "current (signing)".to_owned()
        } else {
            match record {
                Some(r) if r.stage == Stage::Next => {
                    format!("next (published {}s ago)", now.timestamp() - r.published_at)
                }
                Some(r) if r.stage == Stage::Retired && published.contains(&kid) => format!(
                    "retired (published for {}s more)",
                    r.retired_at.unwrap_or(0) + timing.retire_after - now.timestamp()
                ),
                Some(r) if r.stage == Stage::Retired => {
                    "retired (unpublished; file may be deleted)".into()
                }
                _ => "published".into(),
            }
        };
        out.push((kid, state, bits, path));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timing = Timing {
        retire_after: 930,
        publish_before_signing: 330,
    };

    #[test]
    fn status_follows_the_ring_through_a_rotation() {
        let dir = tempfile::tempdir().expect("tmp");
        let t0 = Utc::now();
        generate(dir.path(), t0).expect("first");
        let t1 = t0 + chrono::Duration::seconds(10);
        generate(dir.path(), t1).expect("second");
        let stages = |now| {
            let ring = load(dir.path(), now, T).expect("ring");
            let life = Lifecycle::load(dir.path()).expect("life");
            status(&ring, &life, T)
        };
        let before = stages(t1);
        assert_eq!(before.len(), 2);
        assert_eq!(before[0].stage, Stage::Current, "signer first");
        assert_eq!(before[0].activated_at, Some(t0.timestamp()));
        assert_eq!(before[1].stage, Stage::Next);
        assert_eq!(before[1].published_at, Some(t1.timestamp()));
        assert!(before.iter().all(|k| !k.hand_placed));

        let t2 = t1 + chrono::Duration::seconds(400);
        rotate(dir.path(), t2, T, false).expect("rotate");
        let after = stages(t2);
        assert_eq!(after[0].kid, before[1].kid, "the next key signs");
        assert_eq!(after[0].activated_at, Some(t2.timestamp()));
        assert_eq!(after[1].stage, Stage::Retired);
        assert_eq!(after[1].retired_at, Some(t2.timestamp()));
        assert_eq!(after[1].unpublish_at, Some(t2.timestamp() + T.retire_after));
    }

    fn jwks_kids(ring: &KeyRing) -> Vec<String> {
        let v: serde_json::Value = serde_json::from_slice(&ring.jwks().body).expect("json");
        v["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| k["kid"].as_str().expect("kid").to_owned())
            .collect()
    }

    #[test]
    fn a_key_goes_next_current_retired_then_unpublished() {
        let dir = tempfile::tempdir().expect("tmp");
        let t0 = Utc::now();
        let (_, stage) = generate(dir.path(), t0).expect("first");
        assert_eq!(stage, Stage::Current);
        let first = load(dir.path(), t0, T).expect("ring").signer().kid.clone();

        let t1 = t0 + chrono::Duration::seconds(10);
        let (_, stage) = generate(dir.path(), t1).expect("second");
        assert_eq!(stage, Stage::Next);
        let ring = load(dir.path(), t1, T).expect("ring");
        assert_eq!(ring.signer().kid, first, "a next key does not sign");
        assert_eq!(jwks_kids(&ring).len(), 2, "a next key is published");
        let next = jwks_kids(&ring)
            .into_iter()
            .find(|k| *k != first)
            .expect("next kid");

        let err = rotate(dir.path(), t1, T, false).expect_err("too early");
        assert!(err.to_string().contains("wait"), "{err}");

        let t2 = t1 + chrono::Duration::seconds(T.publish_before_signing);
        let (old, new) = rotate(dir.path(), t2, T, false).expect("rotate");
        assert_eq!(old.as_deref(), Some(first.as_str()));
        assert_eq!(new, next);
        let ring = load(dir.path(), t2, T).expect("ring");
        assert_eq!(ring.signer().kid, next);
        assert!(
            ring.verifier(&first).is_some(),
            "retired key still verifies"
        );

        let t3 = t2 + chrono::Duration::seconds(T.retire_after);
        let ring = load(dir.path(), t3, T).expect("ring");
        assert_eq!(jwks_kids(&ring), vec![next.clone()]);
        assert!(ring.verifier(&first).is_none());
    }

    #[test]
    fn the_signer_cannot_be_retired_and_state_is_shared_by_readers() {
        let dir = tempfile::tempdir().expect("tmp");
        let now = Utc::now();
        generate(dir.path(), now).expect("first");
        let kid = load(dir.path(), now, T).expect("ring").signer().kid.clone();
        assert!(retire(dir.path(), &kid, now, T, false).is_err());
        // Two "replicas" reading the same directory agree on the signer.
        let a = load(dir.path(), now, T).expect("a");
        let b = load(dir.path(), now, T).expect("b");
        assert_eq!(a.signer().kid, b.signer().kid);
        assert_eq!(a.jwks().etag, b.jwks().etag);
    }

    #[test]
    fn hand_placed_keys_work_without_state() {
        let dir = tempfile::tempdir().expect("tmp");
        let now = Utc::now();
        keys::generate_into(dir.path(), now).expect("a");
        let newer = keys::generate_into(dir.path(), now + chrono::Duration::seconds(1)).expect("b");
        let ring = load(dir.path(), now, T).expect("ring");
        assert_eq!(ring.signer().path, newer);
        assert_eq!(ring.keys().len(), 2);
    }

    #[test]
    fn only_keys_missing_from_the_state_file_are_hand_placed() {
        let dir = tempfile::tempdir().expect("tmp");
        let now = Utc::now();
        generate(dir.path(), now).expect("recorded");
        let (_, hand_placed) = load_reporting(dir.path(), now, T).expect("load");
        assert!(hand_placed.is_empty(), "{hand_placed:?}");

        let placed =
            keys::generate_into(dir.path(), now + chrono::Duration::seconds(1)).expect("placed");
        let (ring, hand_placed) = load_reporting(dir.path(), now, T).expect("load");
        let kid = ring
            .keys()
            .iter()
            .find(|k| k.path == placed)
            .expect("the placed key is published")
            .kid
            .clone();
        assert_eq!(
            hand_placed,
            vec![HandPlaced {
                file: file_name(&placed),
                kid
            }]
        );
        assert_ne!(
            ring.signer().path,
            placed,
            "the recorded current key still signs"
        );
    }
}
