//! Frames IPC messages encoded elsewhere (by encoder threads) into an Arrow IPC file
//! or stream: header, schema message, batch messages in order, end marker, footer.
//!
//! Used with `IpcWriteOptions::default()` (metadata V5, 64-byte alignment), which is
//! what [`super::Encoder`] uses, so both paths write the same layout.

use std::io::Write;

use arrow_ipc::convert::IpcSchemaEncoder;
use arrow_ipc::writer::{
    write_message, DictionaryTracker, EncodedData, IpcDataGenerator, IpcWriteOptions,
};
use arrow_ipc::{Block, FooterBuilder, MetadataVersion};
use arrow_schema::{ArrowError, SchemaRef};

use super::Format;

const MAGIC: &[u8; 6] = b"ARROW1";
/// `IpcWriteOptions::default()`'s alignment.
const ALIGNMENT: usize = 64;
/// Continuation marker and a zero length: the end of the message stream.
const END_OF_STREAM: [u8; 8] = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];

pub(super) struct Framer<W: Write> {
    sink: W,
    schema: SchemaRef,
    options: IpcWriteOptions,
    format: Format,
    offset: usize,
    dictionary_blocks: Vec<Block>,
    record_blocks: Vec<Block>,
}

impl<W: Write> Framer<W> {
    /// Writes the file header (file format) and the schema message.
    pub(super) fn new(
        mut sink: W,
        schema: SchemaRef,
        options: IpcWriteOptions,
        format: Format,
    ) -> Result<Self, ArrowError> {
        let mut offset = 0;
        if format == Format::File {
            let header = [0u8; ALIGNMENT];
            let pad = (ALIGNMENT - MAGIC.len() % ALIGNMENT) % ALIGNMENT;
            sink.write_all(MAGIC)?;
            sink.write_all(&header[..pad])?;
            offset = MAGIC.len() + pad;
        }
        let message = IpcDataGenerator::default().schema_to_bytes_with_dictionary_tracker(
            &schema,
            &mut DictionaryTracker::new(true),
            &options,
        );
        let (meta, body) = write_message(&mut sink, message, &options)?;
        Ok(Framer {
            sink,
            schema,
            options,
            format,
            offset: offset + meta + body,
            dictionary_blocks: Vec::new(),
            record_blocks: Vec::new(),
        })
    }

    fn message(&mut self, data: EncodedData) -> Result<Block, ArrowError> {
        let (meta, body) = write_message(&mut self.sink, data, &self.options)?;
        let block = Block::new(self.offset as i64, meta as i32, body as i64);
        self.offset += meta + body;
        Ok(block)
    }

    /// Writes one encoded batch (its dictionary messages first).
    pub(super) fn write(
        &mut self,
        dictionaries: Vec<EncodedData>,
        batch: EncodedData,
    ) -> Result<(), ArrowError> {
        for dictionary in dictionaries {
            let block = self.message(dictionary)?;
            self.dictionary_blocks.push(block);
        }
        let block = self.message(batch)?;
        self.record_blocks.push(block);
        Ok(())
    }

    /// Writes the end marker and, for the file format, the footer; returns the sink.
    pub(super) fn finish(mut self) -> Result<W, ArrowError> {
        self.sink.write_all(&END_OF_STREAM)?;
        if self.format == Format::File {
            let mut fbb = IpcSchemaEncoder::new().schema_to_fb(&self.schema);
            fbb.reset();
            let dictionaries = fbb.create_vector(&self.dictionary_blocks);
            let records = fbb.create_vector(&self.record_blocks);
            let schema = IpcSchemaEncoder::new().schema_to_fb_offset(&mut fbb, &self.schema);
            let root = {
                let mut footer = FooterBuilder::new(&mut fbb);
                footer.add_version(MetadataVersion::V5);
                footer.add_schema(schema);
                footer.add_dictionaries(dictionaries);
                footer.add_recordBatches(records);
                footer.finish()
            };
            fbb.finish(root, None);
            let footer = fbb.finished_data();
            self.sink.write_all(footer)?;
            self.sink.write_all(&(footer.len() as i32).to_le_bytes())?;
            self.sink.write_all(MAGIC)?;
        }
        self.sink.flush()?;
        Ok(self.sink)
    }
}
