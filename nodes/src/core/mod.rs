//! core ops: text templating and joining, reading and writing text files, and
//! printing values.

use flow_engine::Registry;

mod debug_print;
mod file_text;
mod join;
mod template;

/// Registers the core ops.
pub fn register(reg: &mut Registry) {
    reg.register(template::TextTemplate::new());
    reg.register(join::TextJoin::new());
    reg.register(file_text::ReadText::new());
    reg.register(file_text::WriteText::new());
    reg.register(debug_print::DebugPrint::new());
}
