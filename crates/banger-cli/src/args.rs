//! Arguments several command groups share.

use clap::Args;

#[derive(Args, Debug)]
pub struct JsonFlag {
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct Ref {
    /// Name or unambiguous id prefix
    #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub reference: String,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}
