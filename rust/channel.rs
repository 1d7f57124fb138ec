//! placeholder: filled in by the channel work
