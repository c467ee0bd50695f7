//! ec2local: EC2-shaped virtual machines on your own machine, through libvirt/QEMU.
//!
//! Who calls whom: `api` and `cli` call the services (`network`, `storage`, `health`,
//! `host`); services call `db`, `render`, `exec`, `platform` and `paths`. Only `exec`
//! spawns processes, only `db` touches SQLite, only `api::error` picks a status code.

pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod db;
pub mod doctor;
pub mod error;
pub mod exec;
pub mod failpoint;
pub mod forwards;
pub mod guest_ssh;
pub mod health;
pub mod host;
pub mod ids;
pub mod images;
pub mod instances;
pub mod keypairs;
pub mod logging;
pub mod network;
pub mod paths;
pub mod platform;
pub mod qemu_access;
pub mod render;
pub mod storage;
pub mod terminal;
