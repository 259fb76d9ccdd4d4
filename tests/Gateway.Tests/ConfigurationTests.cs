namespace OrleansPush.Gateway.Tests;

/// <summary>A gateway started with a wrong setting stops at once, naming the key: a typo is never ignored in silence.</summary>
public sealed class ConfigurationTests
{
    [Theory]
    [InlineData("OrleansPush:Topics:Namespaces:chat:HistroySize", "10", "did you mean OrleansPush:Topics:Namespaces:chat:HistorySize?")]
    [InlineData("OrleansPush:Gateway:OutboundQueueByte", "100000", "did you mean OrleansPush:Gateway:OutboundQueueBytes?")]
    [InlineData("OrleansPush:Routing:Lease", "00:00:00", "OrleansPush:Routing:Lease must be between")]
    [InlineData("OrleansPush:Topics:Namespaces:chat:HistoryTtl", "-00:00:01", "OrleansPush:Topics:Namespaces:chat:HistoryTtl must be between")]
    [InlineData("OrleansPush:Topics:Namespaces:user:HistorySize", "10", "OrleansPush:Topics:Namespaces:user: personal channels are configured under OrleansPush:Topics:Personal")]
    [InlineData("OrleansPush:Cluster:ResponseTimeout", "00:00:00", "OrleansPush:Cluster:ResponseTimeout must be between")]
    [InlineData("OrleansPush:Proxy:Connect:Url", "ftp://backend/connect", "OrleansPush:Proxy:Connect:Url must be an absolute http or https URL")]
    [InlineData("OrleansPush:Proxy:Publish:Timeout", "00:00:00", "OrleansPush:Proxy:Publish:Timeout must be between")]
    public async Task AWrongSettingStopsTheGatewayWithAMessageNamingTheKey(string key, string value, string message)
    {
        var error = await Assert.ThrowsAnyAsync<Exception>(() => TestGateway.StartEmbeddedAsync(new Dictionary<string, string?> { [key] = value }));

        // The message names the key (or, for a namespace that cannot be configured, the namespace's section).
        Assert.Contains(message, error.Message, StringComparison.Ordinal);
        Assert.Contains(key[..key.LastIndexOf(':')], error.Message, StringComparison.Ordinal);
    }
}
