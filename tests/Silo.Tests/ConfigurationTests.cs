namespace OrleansPush.Silo.Tests;

/// <summary>A silo started with a wrong setting stops at once, naming the key: a typo is never ignored in silence.</summary>
public sealed class ConfigurationTests
{
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(60);

    [Theory]
    [InlineData("OrleansPush:Topics:Namespaces:chat:HistroySize", "10", "did you mean OrleansPush:Topics:Namespaces:chat:HistorySize?")]
    [InlineData("OrleansPush:Storage:Provder", "Redis", "did you mean OrleansPush:Storage:Provider?")]
    [InlineData("OrleansPush:Routing:Lease", "00:00:00", "OrleansPush:Routing:Lease must be between")]
    [InlineData("OrleansPush:Topics:Default:HistorySize", "-1", "OrleansPush:Topics:Default:HistorySize must be between")]
    [InlineData("OrleansPush:Storage:Prefix", "no spaces", "OrleansPush:Storage:Prefix must be")]
    [InlineData("OrleansPush:Streams:QueueCount", "0", "OrleansPush:Streams:QueueCount must be between")]
    public async Task AWrongSettingStopsTheSiloWithAMessageNamingTheKey(string key, string value, string message)
    {
        await using var silo = RunningSilo.Start(new Dictionary<string, string?> { [key] = value });

        var exitCode = await silo.WaitForExitAsync(StartTimeout);

        Assert.NotEqual(0, exitCode);
        Assert.Contains(key, silo.Output, StringComparison.Ordinal);
        Assert.Contains(message, silo.Output, StringComparison.Ordinal);
    }
}
