pub fn run(_t: Tier) -> std::process::ExitCode {
    std::process::ExitCode::SUCCESS
}
pub struct Tier;
impl Tier {
    pub fn new(_s: &str) -> Self {
        Tier
    }
}
