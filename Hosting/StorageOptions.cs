namespace OrleansPush.Hosting;

/// <summary>Which store holds history and grain state (<c>OrleansPush:Storage</c>).</summary>
public sealed class StorageOptions
{
    public const string Section = "OrleansPush:Storage";

    /// <summary><c>Memory</c> (default: lost with the silo), <c>Redis</c> or <c>Postgres</c>.</summary>
    public StorageProvider Provider { get; set; } = StorageProvider.Memory;

    /// <summary>StackExchange.Redis configuration string, e.g. <c>127.0.0.1:6379</c>.</summary>
    public string? Redis { get; set; }

    /// <summary>Npgsql connection string.</summary>
    public string? Postgres { get; set; }

    /// <summary>Prefix of every key or table this project writes, so one server can hold several deployments.</summary>
    public string Prefix { get; set; } = "orleanspush";
}

public enum StorageProvider
{
    Memory,
    Redis,
    Postgres,
}
