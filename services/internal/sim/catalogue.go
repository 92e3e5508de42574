package sim

import eventv1 "causality.dev/api/gen/causality/event/v1"

// The fixed world the simulated app lives in: a shopping app with screens,
// buttons, products, and the devices and places its users have.

type screen struct {
	name    string
	buttons []string
	fields  []string // text fields, by id
}

var screens = []screen{
	{"Home", []string{"search_bar", "banner_promo", "category_tile", "cart_icon", "notifications_bell"}, nil},
	{"Search", []string{"search_submit", "clear_query", "voice_search"}, []string{"search_query"}},
	{"SearchResults", []string{"filter", "sort", "result_card", "load_more"}, nil},
	{"Category", []string{"subcategory_chip", "product_card", "sort"}, nil},
	{"ProductDetail", []string{"add_to_cart", "wishlist", "share", "size_picker", "reviews"}, nil},
	{"Cart", []string{"checkout", "remove_item", "continue_shopping", "apply_coupon"}, []string{"coupon_code"}},
	{"Checkout", []string{"next_step", "edit_address", "pay_now"}, []string{"address_line", "postal_code", "card_number"}},
	{"OrderConfirmation", []string{"track_order", "continue_shopping"}, nil},
	{"Profile", []string{"edit_profile", "orders", "settings"}, []string{"display_name", "phone"}},
	{"Settings", []string{"notifications_toggle", "dark_mode_toggle", "logout"}, nil},
	{"Login", []string{"login", "forgot_password", "sign_in_with_apple", "sign_in_with_google"}, []string{"email", "password"}},
	{"Signup", []string{"create_account"}, []string{"email", "password", "display_name"}},
	{"Wishlist", []string{"product_card", "remove_wishlist"}, nil},
	{"Notifications", []string{"notification_item", "mark_all_read"}, nil},
}

// browseScreens are where plain navigation goes (the rest are reached by flows).
var browseScreens = []string{"Home", "Search", "SearchResults", "Category", "Profile", "Settings", "Wishlist", "Notifications", "Cart"}

func screenByName(name string) screen {
	for _, s := range screens {
		if s.name == name {
			return s
		}
	}
	return screens[0]
}

type product struct {
	id, name, category string
	cents              int64
}

var products = []product{
	{"sku-1001", "Trail Running Shoes", "shoes", 8999},
	{"sku-1002", "Leather Sneakers", "shoes", 12900},
	{"sku-1003", "Wool Socks (3 pack)", "accessories", 1599},
	{"sku-1004", "Rain Jacket", "outerwear", 15900},
	{"sku-1005", "Down Vest", "outerwear", 11000},
	{"sku-1006", "Merino T-Shirt", "tops", 4900},
	{"sku-1007", "Linen Shirt", "tops", 5900},
	{"sku-1008", "Slim Chinos", "bottoms", 6900},
	{"sku-1009", "Denim Jeans", "bottoms", 7900},
	{"sku-1010", "Canvas Backpack", "bags", 8500},
	{"sku-1011", "Leather Belt", "accessories", 3900},
	{"sku-1012", "Sunglasses", "accessories", 12000},
	{"sku-1013", "Water Bottle", "gear", 2500},
	{"sku-1014", "Yoga Mat", "gear", 3500},
	{"sku-1015", "Beanie", "accessories", 1900},
	{"sku-1016", "Hiking Boots", "shoes", 17900},
	{"sku-1017", "Fleece Hoodie", "tops", 6500},
	{"sku-1018", "Swim Shorts", "bottoms", 3900},
	{"sku-1019", "Duffel Bag", "bags", 9900},
	{"sku-1020", "Smart Watch Band", "gear", 2900},
}

var productSources = []string{"search", "home_feed", "category", "recommendation", "wishlist", "deeplink"}

var checkoutSteps = []string{"shipping_address", "delivery_method", "payment"}

var paymentMethods = []string{"card", "apple_pay", "google_pay", "paypal"}

var paymentErrors = []struct{ code, msg string }{
	{"card_declined", "The card was declined by the issuer."},
	{"insufficient_funds", "Insufficient funds."},
	{"3ds_failed", "3-D Secure authentication failed."},
	{"gateway_timeout", "Payment gateway did not answer in time."},
}

var crashes = []struct{ kind, msg, frame string }{
	{"NSInvalidArgumentException", "-[__NSArrayM objectAtIndex:]: index 3 beyond bounds [0 .. 2]", "CartViewController.tableView(_:cellForRowAt:)"},
	{"java.lang.NullPointerException", "Attempt to invoke virtual method 'int java.lang.String.length()' on a null object reference", "com.shop.checkout.PaymentFragment.onViewCreated"},
	{"EXC_BAD_ACCESS", "KERN_INVALID_ADDRESS at 0x0000000000000010", "ImageCache.decode(_:)"},
	{"OutOfMemoryError", "Failed to allocate a 16777232 byte allocation", "com.shop.feed.ImageLoader.load"},
	{"TypeError", "Cannot read properties of undefined (reading 'price')", "ProductCard.render (app.js:1234)"},
}

var customEvents = []string{"search_performed", "share", "promo_banner_shown", "rating_prompt", "video_played"}

var permissions = []string{"notifications", "location", "camera", "photos", "contacts"}

var loginMethods = []string{"password", "google", "apple", "sso"}

var referrals = []string{"organic", "friend_invite", "instagram_ad", "google_ads", "app_store_search", ""}

var profileFields = []string{"display_name", "avatar", "phone", "birthday", "newsletter_opt_in", "shipping_address"}

type model struct {
	platform      eventv1.Platform
	name, maker   string
	width, height int32
	osVersions    []string
}

var models = []model{
	{eventv1.Platform_PLATFORM_IOS, "iPhone16,1", "Apple", 393, 852, []string{"17.5.1", "18.3", "18.6"}},
	{eventv1.Platform_PLATFORM_IOS, "iPhone15,2", "Apple", 393, 852, []string{"17.5.1", "18.3", "18.6"}},
	{eventv1.Platform_PLATFORM_IOS, "iPhone14,7", "Apple", 390, 844, []string{"16.7.8", "17.5.1", "18.3"}},
	{eventv1.Platform_PLATFORM_IOS, "iPad13,18", "Apple", 820, 1180, []string{"17.5.1", "18.3"}},
	{eventv1.Platform_PLATFORM_ANDROID, "Pixel 8", "Google", 412, 915, []string{"14", "15"}},
	{eventv1.Platform_PLATFORM_ANDROID, "SM-S911B", "samsung", 360, 780, []string{"13", "14", "15"}},
	{eventv1.Platform_PLATFORM_ANDROID, "SM-A546B", "samsung", 384, 854, []string{"13", "14"}},
	{eventv1.Platform_PLATFORM_ANDROID, "23021RAA2Y", "Xiaomi", 393, 873, []string{"12", "13"}},
	{eventv1.Platform_PLATFORM_ANDROID, "CPH2449", "OnePlus", 412, 919, []string{"13", "14"}},
	{eventv1.Platform_PLATFORM_WEB, "Chrome", "", 1440, 900, []string{"126", "128", "131"}},
	{eventv1.Platform_PLATFORM_WEB, "Safari", "", 1512, 982, []string{"17.5", "18.2"}},
	{eventv1.Platform_PLATFORM_WEB, "Firefox", "", 1920, 1080, []string{"128", "133"}},
}

// appVersions: newer builds are more common (weights).
var appVersions = []struct {
	version, build string
	weight         int
}{
	{"2.3.4", "2304", 1},
	{"2.4.0", "2400", 3},
	{"2.4.1", "2410", 6},
	{"2.5.0", "2500", 4},
}

var places = []struct{ locale, zone string }{
	{"en-US", "America/New_York"},
	{"en-US", "America/Los_Angeles"},
	{"en-GB", "Europe/London"},
	{"fr-FR", "Europe/Paris"},
	{"de-DE", "Europe/Berlin"},
	{"es-ES", "Europe/Madrid"},
	{"pt-BR", "America/Sao_Paulo"},
	{"ja-JP", "Asia/Tokyo"},
	{"hi-IN", "Asia/Kolkata"},
	{"en-AU", "Australia/Sydney"},
}

var carriers = []string{"Verizon", "T-Mobile", "Vodafone", "Orange", "Telekom", "Movistar", "Vivo", "NTT Docomo", "Jio", "Telstra"}

var networks = []eventv1.NetworkType{
	eventv1.NetworkType_NETWORK_TYPE_WIFI, eventv1.NetworkType_NETWORK_TYPE_WIFI, eventv1.NetworkType_NETWORK_TYPE_WIFI,
	eventv1.NetworkType_NETWORK_TYPE_CELLULAR_4G, eventv1.NetworkType_NETWORK_TYPE_CELLULAR_4G,
	eventv1.NetworkType_NETWORK_TYPE_CELLULAR_5G, eventv1.NetworkType_NETWORK_TYPE_CELLULAR_3G,
	eventv1.NetworkType_NETWORK_TYPE_CELLULAR_2G, eventv1.NetworkType_NETWORK_TYPE_OFFLINE,
}
