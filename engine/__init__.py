"""The engine's parts, driven by distribution.py: plan a settlement's legs
(planning), pay each exactly once (payouts), fixed-mode slots and balance settlements
(fixed_mode, small_balances, legs), the current rate (rates) and crash checkpoints
for the fault tests (faults)."""
