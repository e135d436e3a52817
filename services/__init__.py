"""What operators, LPs and the super user do, each with its rules and audit row:
ownership checks (access), records (accounts), commission rules, the platform's
settings, manual entry, corrections, balance settlement and fixed-mode settings
(settle), and read-only reports."""
