"""usergroups.*"""
