"""grpokit.rl"""
