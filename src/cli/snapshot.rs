//! `switchyard snapshot save|restore|inspect`: backups of the cluster's state (see
//! [`crate::backup`]). Both show progress on a terminal (bytes done, rate, time left).

use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};

use crate::backup::{read_backup, restore, write_backup, BackupHeader, MAX_STATE};
use crate::cli::output::emit;
use crate::cli::Cli;
use crate::node::config::parse_initial_cluster;
use crate::pb::v1::backup_chunk::Kind;

/// Backups.
#[derive(Debug, clap::Subcommand)]
pub enum SnapshotCommand {
    /// Save a consistent copy of the cluster's state to FILE (taken by the node asked, after a
    /// linearizable read: it holds every write acknowledged before the command started).
    Save {
        /// Where to write it (written beside it first, then renamed: never half a file).
        file: PathBuf,
    },
    /// Seed a new member's data directory from a backup, as `etcdutl snapshot restore` does.
    /// Run it once per member, with the same --initial-cluster, then start each member with
    /// `serve` on its data directory.
    Restore {
        /// The backup file.
        file: PathBuf,
        /// The new member's data directory (must not hold a node's data).
        #[arg(long)]
        data_dir: PathBuf,
        /// The new member's id.
        #[arg(long, default_value_t = 1)]
        id: u64,
        /// The new cluster's members: ID=HOST:PORT,... (default: this member alone, at
        /// 127.0.0.1:7700).
        #[arg(long)]
        initial_cluster: Option<String>,
    },
    /// Check a backup and show what it holds.
    Inspect {
        /// The backup file.
        file: PathBuf,
    },
}

/// `snapshot ...`.
pub async fn run(cli: &Cli, cmd: &SnapshotCommand) -> anyhow::Result<()> {
    match cmd {
        SnapshotCommand::Save { file } => save(cli, file).await,
        SnapshotCommand::Restore {
            file,
            data_dir,
            id,
            initial_cluster,
        } => {
            let text = initial_cluster
                .clone()
                .unwrap_or_else(|| format!("{id}=127.0.0.1:7700"));
            let members = parse_initial_cluster(&text)?;
            let started = Instant::now();
            let backup = read_file(file)?;
            restore(&backup, data_dir, *id, &members).await?;
            let h = &backup.header;
            eprintln!(
                "restored revision {} ({} features, {} instances) into {} as node {id} of {} in {:.1} s; start it with: switchyard serve --id {id} --data-dir {} ...",
                h.revision,
                h.features,
                h.instances,
                data_dir.display(),
                members.len(),
                started.elapsed().as_secs_f64(),
                data_dir.display(),
            );
            Ok(())
        }
        SnapshotCommand::Inspect { file } => {
            let backup = read_file(file)?;
            let h = backup.header.clone();
            emit(cli.output, serde_json::to_value(&h)?, || describe(&h));
            Ok(())
        }
    }
}

fn describe(h: &BackupHeader) -> String {
    format!(
        "revision {}\nfeatures {}\ninstances {}\nstate {} bytes\ndigest {}\nraft position term {} index {}\ntaken from node {} at {} by version {}",
        h.revision,
        h.features,
        h.instances,
        h.state_bytes,
        h.digest,
        h.log_term,
        h.log_index,
        h.node_id,
        humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + Duration::from_millis(h.taken_at_ms.max(0) as u64)
        ),
        h.version
    )
}

/// A progress bar on stderr when it is a terminal (hidden otherwise).
fn bar(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} {wide_bar} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {eta} left",
    ) {
        bar.set_style(style);
    }
    bar.set_message(what.to_string());
    bar
}

fn read_file(file: &Path) -> anyhow::Result<crate::backup::Backup> {
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    let progress = bar(size, "checking");
    let backup = read_backup(&mut BufReader::new(f), |n| progress.set_position(n))
        .with_context(|| format!("{} was refused", file.display()))?;
    progress.finish_and_clear();
    Ok(backup)
}

async fn save(cli: &Cli, file: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut stream = cli.client()?.backup().await?;
    let header: BackupHeader = match stream.message().await? {
        Some(crate::pb::v1::BackupChunk {
            kind: Some(Kind::HeaderJson(json)),
        }) => serde_json::from_str(&json).context("the node sent a header this CLI cannot read")?,
        _ => bail!("the node did not start the backup with its header"),
    };
    if header.state_bytes > MAX_STATE {
        bail!("the node announced {} bytes of state", header.state_bytes);
    }
    let partial = file.with_extension("partial");
    let out = std::fs::File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let mut out = BufWriter::new(out);
    write_backup(&mut out, &header)?;
    let progress = bar(header.state_bytes, "saving");
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    let mut received = 0u64;
    let result: anyhow::Result<()> = async {
        while let Some(chunk) = stream.message().await? {
            let Some(Kind::Data(data)) = chunk.kind else {
                bail!("the node sent a second header");
            };
            received += data.len() as u64;
            if received > header.state_bytes {
                bail!(
                    "the node sent more than the {} bytes it announced",
                    header.state_bytes
                );
            }
            sha2::Digest::update(&mut hasher, &data);
            out.write_all(&data)?;
            progress.set_position(received);
        }
        if received != header.state_bytes {
            bail!(
                "the stream ended after {received} of {} bytes",
                header.state_bytes
            );
        }
        if hex::encode(sha2::Digest::finalize(hasher)) != header.state_sha256 {
            bail!("the bytes received do not match their checksum");
        }
        out.flush()?;
        out.get_ref().sync_all()?;
        Ok(())
    }
    .await;
    progress.finish_and_clear();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, file).with_context(|| format!("renaming to {}", file.display()))?;
    let summary = format!(
        "saved {}: revision {}, {} features, {} instances, {} bytes of state, digest {}, in {:.1} s",
        file.display(),
        header.revision,
        header.features,
        header.instances,
        header.state_bytes,
        &header.digest[..16.min(header.digest.len())],
        started.elapsed().as_secs_f64()
    );
    emit(cli.output, serde_json::to_value(&header)?, || summary);
    Ok(())
}
