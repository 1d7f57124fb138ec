//! The exceptions of `phasekit.errors`, raised from Rust.

#![allow(dead_code)]

use pyo3::import_exception;

import_exception!(phasekit.errors, InvalidArgument);
import_exception!(phasekit.errors, ChannelClosed);
import_exception!(phasekit.errors, ChannelFull);
import_exception!(phasekit.errors, ChannelEmpty);
import_exception!(phasekit.errors, Timeout);
import_exception!(phasekit.errors, UnknownKey);
import_exception!(phasekit.errors, WriterError);
import_exception!(phasekit.errors, ConfigError);
